"""The analytics service: counts every event of every stream."""
