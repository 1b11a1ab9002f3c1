"""Owns the client directory's tables (categories, clients, client_phones, orders, the
client_summary view): nothing else writes them; and the [clients] settings (settings.py).
Never imports the call log (calllog/)."""
