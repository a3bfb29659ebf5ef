"""What every stage shares: params, the error family, the stage runner, atomic writes, memory readings."""
