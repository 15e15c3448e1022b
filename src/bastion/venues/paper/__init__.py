"""The built-in paper venue: fills orders against replayed historical prices, in process."""
