"""The site stage: artifacts -> findings (headlines, claims, history) -> charts -> pages -> MkDocs.

Reads only artifact files and the experiment declarations: never imports torch.
"""
