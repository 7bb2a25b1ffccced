"""Image-similarity counterfeit detector: embed listing photos, match brands' references."""
