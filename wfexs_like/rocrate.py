"""Container records as a Workflow Run Crate (RO-Crate) ``ContainerImage`` graph, and back."""
