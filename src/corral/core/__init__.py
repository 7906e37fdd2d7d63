"""Domain models shared by server, SDK and CLI: specs, resources, states, errors."""
