"""Owns the client directory's tables (categories, clients, client_phones, orders, the
client_summary view): nothing else writes them. Never imports the call log (calllog/)."""
