"""Facts about a device: each a command and a pure parser (see base.Fact); device.read_facts gathers them."""
