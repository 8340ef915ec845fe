"""``python -m fedtrack_redis.cli`` is the ``fedtrack`` command."""

from .main import main

main()
