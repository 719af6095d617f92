"""The web app: the built React SPA (``frontend/``), served by the API at ``/``."""
