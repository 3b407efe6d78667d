"""The engine: the services the API and the gateway call, in three subsystems (device
``sessions``, ``jobs``, ``schedules``) wired together in ``services``; the ports they need
from storage and the gateway are declared once, in hub.ports."""
