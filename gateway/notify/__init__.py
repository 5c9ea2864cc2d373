"""The outlet's notifier: tells villagers their pickup codes by SMS through
a local modem while the backhaul is down, exactly once together with the
platform (see ``docs/gateway.md``, "Notifications")."""
