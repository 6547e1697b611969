"""The pure core of a worker: lanes, admission, classes, lifecycles, holdings and
the decisions between them. No redis, asyncio or torch; no await."""
