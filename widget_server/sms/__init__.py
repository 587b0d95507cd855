"""SMS as a second channel of the flows: encoding, the provider, webhooks, phone opt-in."""
