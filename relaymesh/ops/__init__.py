"""Operations: metrics, operator services (audited), reports."""
