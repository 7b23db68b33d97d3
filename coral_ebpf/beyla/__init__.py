"""beyla"""
