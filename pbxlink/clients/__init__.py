"""The client directory: who is calling, and the card an operator sees."""
