"""The user service: owns users; their events are the source of truth."""
