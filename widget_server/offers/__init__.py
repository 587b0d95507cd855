"""Campaigns and the offers they make: the campaign model, sticky assignment, the pure
decision engine, discount codes, the campaign store and the engine that claims offers."""
