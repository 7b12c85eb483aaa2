"""
tmta's tests: twisted.trial TestCases, one module per unit, plus
end-to-end tests that run the real master.
"""
