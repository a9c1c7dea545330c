"""Verification: contingency scores, pooled CSI, continuous scores, LPIPS, bootstrap."""
