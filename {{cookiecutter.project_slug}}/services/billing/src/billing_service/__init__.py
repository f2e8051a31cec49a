"""The billing service: accounts built from user events, and invoices."""
