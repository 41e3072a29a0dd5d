from resnext_deploy.cli import main

main()
