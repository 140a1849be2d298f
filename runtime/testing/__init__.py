"""Test support shipped with the package: tiny random-weight models and scripted fake engines."""
