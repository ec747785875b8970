"""Runnable examples for siot_authz."""
