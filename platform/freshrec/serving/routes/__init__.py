"""Route groups; each module's ``router(settings)`` builds its routes with the configured limits."""
