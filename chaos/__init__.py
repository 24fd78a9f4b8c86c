"""squall.chaos"""
