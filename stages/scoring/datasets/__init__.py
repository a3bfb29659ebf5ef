"""Reading datasets: blocks of rows with safe texts and ids (`blocks`), each file format's reader (`readers`), and
gold annotations read as character spans (`annotations`)."""
