"""squall.core"""
