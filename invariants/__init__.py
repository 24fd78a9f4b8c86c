"""squall.invariants"""
