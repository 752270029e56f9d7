"""Loopback fakes of services that cannot run here, each held to the vendor's contract."""
