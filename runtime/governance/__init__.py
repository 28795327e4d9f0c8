"""Governance: the audit trail of every decision about a model (audit, audit_store), approval
before the serving alias moves (approvals), and model cards (card)."""
