"""Outbound webhooks, shared by the services that send them (batches, agent turns): where one may go
(destinations.py: SSRF rules checked after resolving), its Standard Webhooks signature (signing.py), and one POST to
the checked addresses (delivery.py)."""
