"""squall.scenarios"""
