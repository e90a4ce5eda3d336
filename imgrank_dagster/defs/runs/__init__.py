"""Sensors that watch runs, not assets: this folder holds no asset group."""
