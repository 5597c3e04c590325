"""The dispatcher's workspace page at ``/console``.

Like the live wall (``/``), the page holds no incident and no unit: it is the same small
document for everyone, and everything it shows comes from the API with the bearer token of its
URL fragment (``/console#token=gg_...``), so the caller's scope decides what reaches the
browser. Its script and style are this server's static files (Leaflet from the vendored copy);
nothing is loaded from elsewhere. Live updates come from polling the existing feed
(``/api/v1/live``): a change there makes the page read the queue and the unit board again.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.wall_display import FEED_PATH, POLL_INTERVAL_MS

router = APIRouter()

#: Where the page lives.
CONSOLE_PATH = "/console"

_PAGE = f"""<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>调度工作台 · dispatcher's workspace · gridgov</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/vendor/leaflet-1.9.3/leaflet.css">
<link rel="stylesheet" href="/static/gridgov/gridgov-console.css">
</head>
<body>
<div id="gg-console" class="gg-console"
     data-feed="{FEED_PATH}" data-interval="{POLL_INTERVAL_MS}"></div>
<script src="/static/vendor/leaflet-1.9.3/leaflet.js"></script>
<script src="/static/gridgov/gridgov-console.js"></script>
</body>
</html>
"""


@router.get(CONSOLE_PATH, include_in_schema=False, response_class=HTMLResponse)
def console_page() -> HTMLResponse:
    headers = {
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(_PAGE, headers=headers)
