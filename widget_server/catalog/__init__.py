"""The product catalog: feed parsing, the catalog store and import, the similar-products
index and the similar-products offer."""
