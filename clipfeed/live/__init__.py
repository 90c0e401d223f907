"""Live streams: state and stream keys, viewers, chat (WebSocket), replays, the Go-live and live pages.

The RTMP ingest and the LL-HLS packager (``ingest*.py``, ``packager*.py``) code against
``service.authorize_publish`` / ``service.publish_ended`` / ``service.note_viewer``.
"""
