"""``sidrec serve`` and ``sidrec update``: the HTTP service, its SID registry and daily updates."""
