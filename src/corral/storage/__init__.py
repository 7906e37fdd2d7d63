"""Files: code archives, job directories, listing and reading outputs safely."""
