"""Per-tenant safety policies: who is calling, what they may change, what happens to toxic text.

Pure logic (no Ray, FastAPI or torch), used by the HTTP ingress: load a policy file into a
`PolicySet`, authenticate a request to a `Tenant`, decide its steering, rate-limit it, audit it.
"""

from policies.audit import AuditLog, audit_event
from policies.loader import PolicyFileError, PolicySet, load_policies, parse_policies, parse_policy_text
from policies.overrides import CUSTOM_TIER, OverrideForbidden, effective_steering, tier_of
from policies.ratelimit import RateLimiter, retry_after_header
from policies.schema import Policy, PolicyFile, PolicySettings, PolicySpec, TenantSpec
from policies.store import PolicyStore
from policies.tenants import AuthError, Tenant, authenticate, hash_key

__all__ = [
    "AuditLog",
    "AuthError",
    "CUSTOM_TIER",
    "OverrideForbidden",
    "Policy",
    "PolicyFile",
    "PolicyFileError",
    "PolicySet",
    "PolicySettings",
    "PolicySpec",
    "PolicyStore",
    "RateLimiter",
    "Tenant",
    "TenantSpec",
    "audit_event",
    "authenticate",
    "effective_steering",
    "hash_key",
    "load_policies",
    "parse_policies",
    "parse_policy_text",
    "retry_after_header",
    "tier_of",
]
