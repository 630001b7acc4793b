"""The console's pages, one module per resource (as Frigate's API has one router per resource).

Each module's ``routes(context, pages)`` returns its routes; ``app.create_app`` collects them. Handlers are
module functions given the context and the shared ``pages.Pages`` (``pages.route`` binds them).
"""
