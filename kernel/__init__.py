"""The shared kernel: small helpers every app uses (database, pagination, permissions, API error shapes).

It imports no project app and nothing of mandate_wizard (import-linter checks it; docs/architecture.md).
"""
