"""Who is calling: users, sessions, OIDC and local login, API tokens, the principal."""
