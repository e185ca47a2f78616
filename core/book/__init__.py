"""V6's book: strategies made of legs, intents, orders and fills (positions derive from fills).

`core.book.ledger.Book` is the Delta-backed book; `core.book.trades` derives closed trades.
Its vocabulary (strategy types, states, ids, order refs) lives in `core.domain`, below the
store and reconciliation, which the book uses.
"""
