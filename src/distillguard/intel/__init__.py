"""Threat-intelligence exchange: indicators that may leave a provider, and how they are stored, shared
(STIX 2.1 over TAXII 2.1) and matched against traffic.

What crosses between providers is an `Indicator`: a network value (address, range, ASN, user agent), a
keyed digest of an identifier (account, organisation, payment or device fingerprint), or a keyed MinHash
sketch of a prompt skeleton. Never a raw prompt, never a raw customer identifier.
"""
