"""The visitor's live state: sessions and profiles in the store, and their typed view."""
