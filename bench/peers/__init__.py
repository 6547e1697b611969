"""Peer job queues for bench/supply.py. These modules run in the peers' own venvs
(bench/.venv-peers, bench/.venv-arq), not the project's: stdlib and the peer only."""
