"""Foundation tests (issue 3): exact analytic counts, properties, presets and the analytic CLI."""
