"""The notification service: sends email when users and invoices change."""
