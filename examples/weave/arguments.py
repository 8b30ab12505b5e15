# Words after the script's name on the command line.
print(CurrentScript().arguments)
