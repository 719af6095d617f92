"""Everything that touches torch and ultralytics. Imported by workers only, lazily."""
