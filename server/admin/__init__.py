"""Administration: accounts and the audit trail (the GPU queue joins with the job system)."""
