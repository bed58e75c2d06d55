"""The web dashboard: `conveyor.dashboard.app.create_app(registry)` (see its module)."""
