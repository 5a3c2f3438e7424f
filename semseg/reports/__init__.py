"""Pictures and reports of results: palettes, colorized label maps, overlays, legends, example panels."""
