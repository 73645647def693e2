"""Tusk DAG consensus with passive cores and untrusted drivers."""
