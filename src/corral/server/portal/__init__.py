"""The web portal: server-rendered pages at ``/``, served by the server itself (``docs/portal.md``).

Pages are Jinja2 templates filled from the same services the API's routes call, under the same rules
(``server/access.py``); what a page does in the browser (charts, live logs, downloads, terminate, resize) it asks
of the API at ``/api/v1``, signed in by the portal's cookie. Every asset is in ``static/`` (htmx and uPlot
vendored): no request leaves the server's origin.
"""

from __future__ import annotations

from corral.server.portal.pages import install

__all__ = ["install"]
